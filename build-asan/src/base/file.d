build-asan/src/base/file.o: src/base/file.c src/base/file.h
src/base/file.h:
