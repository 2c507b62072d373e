"""Embedding models. Each module holds one model behind the contract in
`base` and declares it (`entry.ModelEntry`); `table` lists them, and
`registry` builds the configured set from it."""
