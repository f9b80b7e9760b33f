"""The data stage: inputs -> tokenizer -> token shards (`workbench data prepare`), and the batches the trainer reads."""
