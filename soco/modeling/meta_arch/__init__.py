"""One module per pretraining method over a shared base; importing this registers them all."""
