"""Gateway: the public API over the embedder, search and catalog.

One module per use case, each over `ports.Backends` (the ports to the other
services and the kept uploads): libraries, items, insert (the saga), search
and ranking, monitor (a stream, window by window, with `occurrences`
tracking each match from start to end), stats, repair, reindex (with
reembed). `facade.Gateway` puts
them behind one object for the thin `servicer`; `convert` maps protobuf to
records and back, and `clients` implements the ports over gRPC."""
