"""Timing and measuring: the step benchmark, the parts bound, the profile, machine facts, the learning proof."""
