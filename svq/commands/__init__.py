"""`svq` sub-commands that wrap the library for the terminal: one module per group, each with
`add_parser(sub)` (wired in `svq.cli`).

Parts:
    codec  svq encode / decode / reconstruct: pictures <-> a tokenizer's 36 ids
    chat   svq chat: talk with an SVQChat folder in the terminal
    train  svq train STAGE: the training scripts under one command
(`svq eval` is svq.eval.cli, `svq world` svq.data.command, `svq demo` svq.demo.)"""
