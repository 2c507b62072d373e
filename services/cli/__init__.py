"""The `audiosearch` command line: talks only to the gateway, except
`serve`, which starts the four services as local processes."""
