"""shared: opts, cmd_opts, the loaded model (stand-in)."""
import os

from modules import cmd_args, options, paths, shared_state
from modules.options import OptionInfo, options_section  # noqa: F401 - re-exported like the webui

cmd_opts = cmd_args.parser.parse_args([])
opts = options.Options({
    "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip"),
    "use_old_emphasis_implementation": OptionInfo(False, "Use old emphasis implementation"),
    "emphasis": OptionInfo("Original", "Emphasis mode"),
    "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit"),
    "use_old_scheduling": OptionInfo(False, "Use old prompt editing timelines"),
    "sdxl_crop_top": OptionInfo(0, "crop top"),
    "sdxl_crop_left": OptionInfo(0, "crop left"),
})
config_filename = os.path.join(paths.data_path, "config.json")
opts.load(config_filename)  # a fresh install: no config.json, so data starts empty (defaults are read through)
sd_model = None
state = shared_state.State()
