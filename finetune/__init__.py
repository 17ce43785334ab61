"""Dataset -> collator -> PEFT training with accelerate -> adapter."""
