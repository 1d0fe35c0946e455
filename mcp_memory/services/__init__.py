"""What the manager is made of: one idea per module, each given its dependencies, none holding a
reference back."""
