"""CLI sub-commands, one module each (discovered by ``nnsens_core.__main__``)."""
