from edgellm.cli import run

run()
