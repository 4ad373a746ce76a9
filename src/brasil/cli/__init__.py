"""Command-line entry points: `brasil` and `push`. The one place where exceptions become messages
for people (:func:`brasil.cli.errors.report`)."""
