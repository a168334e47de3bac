"""Coders of the three streams of a .sedic file: reference image, text and masks."""
