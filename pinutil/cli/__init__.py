"""The `pinutil` command: argument parsing, prompts and output over the core (`app` is
the entry point; `master_key` and `salt_key` hold their subcommands)."""
