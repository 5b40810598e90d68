"""The video itself: probing, chunk plans, decoding (``video``) and shot boundaries (``shots``)."""
