"""Training LAPA-DINOv3-style latent action models: `lary train` (`lary.training.trainer.train`, options in
`lary.configs.train.TrainConfig`)."""
