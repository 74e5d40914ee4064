"""DESOM: deep embedded self-organizing maps for exposure quality and content search.

A plain library (no Django): the SOM layer, autoencoders, training, metrics, FITS reading,
source detection, cutouts, histo-vectors, the survey simulator and plots.
"""
__version__ = "0.1.0"
