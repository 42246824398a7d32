"""The ``vocabshift`` command line: a thin layer over the library (parse flags, build a config, call one function)."""
