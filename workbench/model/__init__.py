"""The model stage: the Llama-3-style decoder (torch), its config, the size rule and the parameter and FLOP
accounting (pure)."""
