"""Across titles: people linked between a library's titles, and reviewers' corrections."""
