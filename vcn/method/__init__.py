"""The clustering methods behind one registry (``registry``): VideoClusterNet
(``videoclusternet``: view bank, finetune ↔ matching, parameter-free clustering), and the ``vct``
track transformer."""
