build-asan/src/msg/dotstuff.o: src/msg/dotstuff.c src/msg/dotstuff.h
src/msg/dotstuff.h:
