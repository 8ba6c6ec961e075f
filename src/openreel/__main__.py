from openreel.cli import app

app()
