"""What a method is and hands back: the Method interface and its Task, synthetic sets, budgets and their
parity with the official code, the distillation loop, saved sets. A plugin builds on this layer."""
