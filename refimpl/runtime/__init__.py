"""Running a model: chunk schedule, the streaming driver, engines (refimpl's and onnxruntime's), tokenizer."""
