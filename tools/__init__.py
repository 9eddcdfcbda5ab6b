"""Developer tools: real-kernel ground-truth scenarios and benchmark capture generators."""
