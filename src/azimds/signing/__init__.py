"""Signing: the keys azimds signs with, kept in the store so every node of a fleet signs alike."""
