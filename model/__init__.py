"""Everything about the CNN (architectures, preprocessing, training, evaluation, bundles); nothing about archives."""
