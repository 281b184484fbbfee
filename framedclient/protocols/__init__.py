"""
Codecs for real-world protocols, built on the codec interface in
:mod:`framedclient.codec`.
"""
