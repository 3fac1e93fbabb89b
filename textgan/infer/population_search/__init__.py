"""Population search over a trained generator's latents for the images that best match a prompt.

settings (what a search is asked to do; no torch), space (genomes -> images), algorithms (GA, CMA-ES,
best-of-N behind ask/tell), scorers (CLIP, AugCLIP, D's logit and contrastive heads, weighted sums),
verifiers (held-out scores), loop (one prompt), run (many prompts: the API), output (the folder, search.json,
grid, plot), job (one part of a folder's prompts, in any process). `textgan.infer.search` is run.search.
"""
