"""The reward model learned from the raters: sentence embeddings of (prompt, response) (`embedder`), a ridge head
fit on the human scores and measured on held-out ones (`fit`, `head`), refit and used for scoring in its own thread
(`worker`). See docs/learned-reward.md."""
