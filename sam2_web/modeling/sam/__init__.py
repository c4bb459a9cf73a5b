"""SAM's prompt encoder, mask decoder and the attention layers they (and the memory) use."""
