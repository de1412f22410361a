"""The face engine: model files, decoding, detection, alignment, embedding, the pipeline and
annotation. Nothing here imports Textual, so the CLI, the TUI and scripts share it."""
