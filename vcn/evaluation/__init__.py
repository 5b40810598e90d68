"""Scoring predictions against face-level labels: WCP, NMI, ARI, B-cubed, cluster ratio."""
