"""The stages that turn captured input and commands into results."""
