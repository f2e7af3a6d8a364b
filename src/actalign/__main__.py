from actalign.cli import entry

entry()
