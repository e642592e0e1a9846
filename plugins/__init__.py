"""Built-in feature plugins (training terms, samplers, attacks …) live here."""
