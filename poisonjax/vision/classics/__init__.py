"""The survey's classic attack families on images (influence, label flipping, ...)."""
