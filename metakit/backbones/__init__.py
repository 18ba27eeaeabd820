"""Backbones: the Backbone interface and the built-in networks."""
