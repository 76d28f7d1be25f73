"""`lary extract`: latent actions (or encoder features) of datasets, videos, image folders and LeRobot episodes,
sharded over processes, decoded in worker processes, resumable. The command is `lary.extract.command.extract`; its
options are `lary.configs.extract.ExtractConfig`."""
