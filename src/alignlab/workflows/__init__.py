"""Orchestration over the layers below (train, eval, rewards): experiments that chain several runs."""
