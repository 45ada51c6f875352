"""Running a pruned model outside PyTorch: GGUF for llama.cpp, DeciLM for vLLM, serving and timing."""
