"""Training: one script per stage, each `python -m svq.train.<stage> CONFIG [--flag value]`
(or `svq train <stage> ...`); CONFIG is a file or a shipped config's name (svq/configs/).

Parts:
    options         the option groups every stage composes (run, data, loss, optimiser, logs)
    common          options from YAML + flags, checkpoints and exact resume, optimiser groups,
                    schedule, the non-finite-loss stop, release folders and summaries
    loop            the one optimisation loop; a stage gives it its loss and hooks (`Stage`)
    image_data      the tokenizer stages' training loader and held-out pictures
    losses          their objectives: MSE + L1 + LPIPS, or a code head's cross-entropy
    stage1          the tokenizer: encoder, 36 continuous tokens, decoder
    attribute_loss  stage 1's auxiliary loss: the attribute record read from the first tokens
    stage2          the k-means codebook over the frozen encoder's tokens, then a decoder
                    fine-tune on quantised tokens
    vq              the spatial VQ tokenizer (the last mile)
    ids_to_grid     the ids-to-grid model, offline on rendered pictures
    llm_sft         chat SFT of the LLM (optional language pre-training first)
"""
