"""Embedding models. Each module holds one model behind the contract in
`base`; `registry` builds the configured set."""
