from alignlab.cli import entry

entry()
