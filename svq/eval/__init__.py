"""Evaluation: every figure the project reports, each gated, with its chance level or
trivial baseline beside it.

Parts:
    metrics           PSNR and SSIM per picture
    reconstruction    PSNR / SSIM / LPIPS / rFID and the judge's reading of reconstructions
    baselines         mean picture, thumbnails, PCA: what a tokenizer must beat
    ordering          prefix curve, group swaps: how information spreads over the 36 tokens
    probes            which token carries which attribute (linear probes, token swaps)
    codebook_metrics  code usage, perplexity, dead codes, re-encode stability
    judge, gate       the attribute judge (shipped in judges/; svq.train.judge trains one)
                      and its gate before any score
    chat_eval, chat_scores  chat figures: following, identity, understanding, replies, intervals
    stats             bootstrap and Wilson intervals
    report, html, plots  one run folder -> report.json, report.html and PNG plots
    cli               `svq eval`
"""
