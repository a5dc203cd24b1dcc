"""Command-line flag of the Embedding Sanitizer extension (read by the webui before parsing args)."""
import os


def preload(parser):
    parser.add_argument(
        "--embedding-sanitizer-policy",
        type=str,
        default=os.environ.get("EMBEDDING_SANITIZER_POLICY") or None,
        help="Embedding Sanitizer: JSON policy file for shared installations (lock the sanitizer on, "
             "intensity floor, forced method, required concepts, defaults). Also read from the "
             "EMBEDDING_SANITIZER_POLICY environment variable.",
    )
