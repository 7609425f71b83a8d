from fixray.cli import console

console()
