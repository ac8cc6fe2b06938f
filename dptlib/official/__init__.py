"""The authors' release, read as it is: its adapter and transformer, its checkpoint reader, and the
converter to this repository's adapter (``docs/official-code-notes`` in shared/ says where the
release differs from the paper). Imports the method, not the reverse.
"""
