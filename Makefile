# The two commands (README): each sets up what is missing first.
#   make train [NP=N] [ARGS="--epochs=1 ..."]   train on CIFAR-10 with horovodrun
#   make test [ARGS='-m "not slow"']             the whole test suite (or its fast tier)
NP ?=
ARGS ?=

.PHONY: setup train test
setup:
	tools/setup.sh
train:
	NP=$(NP) tools/train.sh $(ARGS)
test:
	tools/test.sh $(ARGS)
