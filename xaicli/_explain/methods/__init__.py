"""The built-in explanation methods: every module here declares its methods with
``registry.method`` (and each method its options), and the registry reads them all."""
