import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--skip-install", action="store_true")
parser.add_argument("--api", action="store_true")
parser.add_argument("--nowebui", action="store_true")
parser.add_argument("--freeze-settings", action="store_true")
