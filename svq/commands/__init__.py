"""`svq` sub-commands that wrap the library for the terminal: one module per group, each with
`add_parser(sub)` (wired in `svq.cli`)."""
