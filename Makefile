# The two commands of README.md. Both set up everything they need on a fresh machine.
.PHONY: demo test

demo:
	scripts/setup.sh local
	.venv/bin/python -m backend_local generate examples/*.png --out outputs

test:
	scripts/setup.sh local,remote,blender,test
	.venv/bin/python -m pytest
