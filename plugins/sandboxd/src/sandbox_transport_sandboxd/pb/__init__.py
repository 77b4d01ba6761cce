"""Protobuf modules generated from ``../proto`` by ``plugins/sandboxd/generate_protos.py``
(checked in; never edit them by hand)."""
