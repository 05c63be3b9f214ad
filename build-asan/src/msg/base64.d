build-asan/src/msg/base64.o: src/msg/base64.c src/msg/base64.h
src/msg/base64.h:
